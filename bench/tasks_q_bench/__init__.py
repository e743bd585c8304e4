"""Bench tasks for django-tasks-q, installed into testproject with TQ_EXTRA_APPS.

``benchcounter`` comes from ``bench/peers/side`` on PYTHONPATH (the harness sets it).
"""
