"""Analyses over the layers: site checks, overlays, slope, rules, their inputs, outputs and processes."""
