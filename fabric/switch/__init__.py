"""A RoCE-style L3 switch, sans-IO: IPv4 helpers (`packet`), PFC frames (`pfc`) and the
forwarding, buffering, ECN and PFC logic (`core.SwitchCore`) that the switch's I/O process
feeds with packets and fabric time."""
