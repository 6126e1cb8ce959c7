"""The standalone app's entry point (PyInstaller runs this file).

Started with no arguments, as a double-click does, it opens the web page (`nstyle gui`);
with arguments it is the `nstyle` command line, so the bundle's executable also runs
`nstyle example`, `nstyle serve`, `nstyle photo.jpg painting.jpg -o out.png` ...
"""

import multiprocessing
import os
import sys


def _log_to_file_without_console() -> None:
    """A windowed app (macOS .app, a Windows build made with --windowed) has no stdout or
    stderr; printing would fail, so its messages go to a log file in the user's log folder."""
    if sys.stdout is not None and sys.stderr is not None:
        return
    from platformdirs import user_log_dir

    folder = user_log_dir("nstyle")
    os.makedirs(folder, exist_ok=True)
    log = open(os.path.join(folder, "nstyle-app.log"), "a", buffering=1, encoding="utf-8")
    sys.stdout = sys.stdout or log
    sys.stderr = sys.stderr or log


def main() -> int:
    multiprocessing.freeze_support()  # a frozen child process must not rerun the app
    _log_to_file_without_console()
    from nstyle.cli.main import main as nstyle_main

    return nstyle_main(sys.argv[1:] or ["gui"])


if __name__ == "__main__":
    sys.exit(main())
