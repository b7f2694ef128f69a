"""nbm stage package: see DESIGN.md."""
