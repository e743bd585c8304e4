"""Broker connections, producers and our kombu transports."""
