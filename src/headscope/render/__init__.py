"""Rendering: figures and pages made from result objects (never from models)."""
