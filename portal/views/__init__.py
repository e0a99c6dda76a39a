"""The pages (`pages.py`): HTML entry points with no business rules."""
