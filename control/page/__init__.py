"""The Resources page: static HTML, CSS and JavaScript that the API serves and that read and act
through the API only (so the page can never show what the API would not)."""

from pathlib import Path

PAGE_DIR = Path(__file__).resolve().parent
