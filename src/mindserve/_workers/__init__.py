"""Worker processes: several per servable, one per device, fed from the main process."""
