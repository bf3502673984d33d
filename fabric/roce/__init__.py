"""A RoCEv2-style reliable transport over UDP 4791: wire format and sans-IO queue pairs."""
