"""Play in the browser: one server steps every player's world in one batched env (see server.py)."""
