# Sourced at the start of every device call: install the carried wheels once per machine, put the repo on the path.
if [ -d .whl ] && [ ! -f /tmp/site/.installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 \
    || { echo "wheel install failed"; exit 1; }
  touch /tmp/site/.installed
fi
[ -f /tmp/site/.installed ] || { echo "no wheels installed: carry .whl in the first call"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 SDL_VIDEODRIVER=dummy
