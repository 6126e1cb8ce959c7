from nstyle.cli.main import entry_point

__all__ = ["entry_point"]
