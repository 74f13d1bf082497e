"""Headstart's engine: fine-tune a pretrained image backbone on a folder of pictures. No UI code lives here."""

__version__ = "0.1.0"
