"""The sub-commands of `ssd`, one file each (see `ssd.cli.main`)."""
