"""The ``lineside`` subcommands beyond ``run``: model work, teaching, the live status view."""
