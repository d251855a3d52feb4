"""The command line: the `ssd` command (`main`), one file per sub-command (`commands/`), and what only the
command line uses: detection over files and videos, finding media, the augmentation grid."""
