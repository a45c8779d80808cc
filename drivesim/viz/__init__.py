"""Figures and animations: replays, maps, reports."""
