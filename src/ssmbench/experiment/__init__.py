"""Experiments: configure, train, measure, store and sweep cells of model × task × seed."""
