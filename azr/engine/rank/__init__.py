"""What every engine rank runs: the command loop and the Policy it serves."""
