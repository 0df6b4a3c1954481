"""Kubernetes adapters: manifest rendering and in-cluster configuration."""
