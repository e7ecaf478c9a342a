"""Being a systemd service: the notify protocol, the progress watchdog, logging set-up."""
