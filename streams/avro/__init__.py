"""Avro contracts: schema store, value checks, and wire codecs."""
