"""Guards around a run that are not AZR itself: memory and disk plans, watchdog, monitors, safety."""
