"""The run layer: runners that drive node processes on a built fabric, one module per kind.

`traffic` forks the node processes, hands each its plan, waits for ready, starts them together
and collects their records (and is what the RoCE comparison and PrfaaS runs move their KV
with); `probe` pings and measures paths; `roce`, `memory`, `lpu` and `prfaas` run their
kind's experiments. The fabric kinds (`fabric.kinds`) call these; nothing below calls up here.
"""
