"""Containers: find every pickle stream a victim's loader would read, by content, not by extension."""
