"""`python app.py`: the workbench web app on a database that is ready to look at.

On a fresh database it seeds what `cai init` seeds (the default constitution and the sample prompts
from data/) and, when no users exist, creates an `admin` account whose password is printed once (or
taken from $CAI_ADMIN_PASSWORD), so the README's one command just works. Before the port opens it converts
the embedded models into the cache if they are not ready (once, a progress line per step on stderr; skipped
with $CAI_PREPARE_MODELS=0), so the first run a user launches does not wait on a conversion.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from cai.backends.builtin import POLICY_DEFAULT  # noqa: E402


def prepare(db_path: str | None, model: str = POLICY_DEFAULT) -> tuple[str, str | None]:
    """Create/migrate the database, seed it, ensure an admin; returns (path, new admin password or None)."""
    from cai import arena, constitution, data, models, store, users

    path = str(store.db_path(db_path))
    db = store.connect(path)
    constitution.seed_default(db)  # what `cai init` installs: the default constitution ...
    data.seed_samples(db)  # ... and the sample red-team and helpful prompt sets
    data.seed_sample_prefs(db)  # ... and a small human preference set, so the agreement eval runs at once
    models.seed_embedded(db)  # ... the embedded models (smollm2, gemma3-270m, alias default, tiny) ...
    models.ensure_model(db, model)  # so the Models tab can chat with them at once
    arena.seed_sample_campaign(db)  # ... and, on a fresh database, a blind campaign between the embedded two
    password = users.ensure_admin(db, os.environ.get("CAI_ADMIN_PASSWORD") or None)
    db.close()
    return path, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python app.py", description="Constitutional AI Workbench web app.")
    parser.add_argument("--db", default=None, help="Workbench database (default: $CAI_DB or ./data/workbench.db).")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on (0.0.0.0 for all).")
    parser.add_argument("--port", type=int, default=7860, help="Port to listen on.")
    parser.add_argument("--model", default=POLICY_DEFAULT,
                        help=f"Default model for chat and forms (name, path or hub id; default {POLICY_DEFAULT}, "
                        "the policy & chat default; forms of feedback stages keep theirs unless this is another).")
    parser.add_argument("--forwarded-allow-ips", default=None,
                        help="Behind a reverse proxy: the proxy addresses whose X-Forwarded-For/-Proto headers are "
                             "trusted (comma-separated, or '*'; default: $CAI_FORWARDED_ALLOW_IPS, else none).")
    parser.add_argument("--secure-cookies", action="store_true",
                        help="Mark the session cookie Secure (automatic on requests that arrive over https).")
    args = parser.parse_args(argv)

    path, password = prepare(args.db, args.model)
    if password and not os.environ.get("CAI_ADMIN_PASSWORD"):
        print(f"Created user 'admin' with password: {password}  (shown once; change it with `cai users passwd admin`)")
    elif password:
        print("Created user 'admin' with the password from $CAI_ADMIN_PASSWORD")
    print(f"Workbench database: {path}", flush=True)
    if os.environ.get("CAI_PREPARE_MODELS", "1") not in ("0", "false", "no"):
        from cai.backends import builtin

        try:
            builtin.prepare([*builtin.EMBEDDED, *([args.model] if args.model in builtin.BUILTINS else [])])
        except builtin.ConversionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    from ui.warmup import serve  # no Gradio import here: the port listens at once, the app builds behind it

    def build() -> object:
        from ui.app import server

        return server(path, args.model, secure_cookies=args.secure_cookies)

    url = f"http://{args.host}:{args.port}"
    serve(build, args.host, args.port, f"* Workbench at {url}/  (sign in at /login; rater page: {url}/arena/)",
          args.forwarded_allow_ips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
