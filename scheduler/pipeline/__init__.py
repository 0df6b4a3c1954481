"""The placement pipeline as small pure stages with typed outcomes.

admit (static filters) -> offer (the holder's gate) -> quote -> score -> bind, else queue or
preempt. Each stage is a module of its own; the engine numbers the steps and applies the
events they lead to.
"""
