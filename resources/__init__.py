"""Data, not code: icons, theme, model presets. A package only so that it installs with the app."""
