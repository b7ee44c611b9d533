"""Jinja templates of the start-task script (package data for `bootstrap`)."""
