"""What a runtime reports: observers, version events, status records."""
