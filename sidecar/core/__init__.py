"""The pure decision core: no I/O, no clock, no grpc, no onnxruntime.

Everything here is a function of its arguments, so the same request and the same
policy always give the same decision. Time comes in as an argument (``now``)."""
