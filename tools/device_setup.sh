# Sourced at the start of every device call: install whatever carried wheel folders (.whl*/) hold, once per
# wheel per machine (so calls can carry different subsets under the 64 MiB limit), put the repo on the path.
mkdir -p /tmp/site/.done
for w in .whl*/*.whl; do
  [ -f "$w" ] || continue
  [ -f "/tmp/site/.done/$(basename "$w")" ] && continue
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$w" >/dev/null 2>&1 \
    || { echo "wheel install failed: $w"; exit 1; }
  touch "/tmp/site/.done/$(basename "$w")"
done
ls /tmp/site/.done | grep -q . || { echo "no wheels installed: carry .whl in the first call"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 SDL_VIDEODRIVER=dummy
