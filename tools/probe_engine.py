import os, time, multiprocessing as mp
def worker(n):
    import vizdoom as vzd
    g=vzd.DoomGame(); g.load_config(os.path.join(vzd.scenarios_path,"freedoom2.cfg"))
    g.set_doom_map("MAP01"); g.set_window_visible(False); g.set_screen_format(vzd.ScreenFormat.RGB24)
    g.set_screen_resolution(vzd.ScreenResolution.RES_160X120); g.set_render_hud(False)
    g.set_available_buttons([vzd.Button.MOVE_FORWARD, vzd.Button.TURN_LEFT]); g.init(); g.new_episode()
    t=time.time(); k=0
    while time.time()-t<4:
        if g.is_episode_finished(): g.new_episode()
        g.make_action([1,k%2],1); s=g.get_state(); k+=1
    return k/4
if __name__=="__main__":
    import torch
    print(torch.__version__, torch.cuda.get_device_name(0), os.cpu_count())
    for n in (1,16):
        with mp.get_context("spawn").Pool(n) as p: r=p.map(worker,range(n))
        print(n,"procs total steps/s",sum(r))
    from torch.nn.attention.flex_attention import flex_attention; print("flex ok")
