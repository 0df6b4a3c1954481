"""The pure placement core: state, queue, planner and one placement attempt (no Ray, no I/O).

``scheduler.engine.Engine`` is the façade over these modules; docs/queueing.md states the
semantics they implement and tests/reference.py is their executable reference.
"""
