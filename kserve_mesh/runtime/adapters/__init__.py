"""What the third-party runtime adapters (``runtime.mlserver``, ``runtime.triton``) share.

Each adapter drives an inference server that runs as its own process: it starts it (or attaches
to one), loads and unloads models through the server's repository API, measures what each load
costs in memory and forwards V2 calls. The parts that do not depend on which server it is live
here, once:

- ``loads``: ``ModelLoads``, the model bookkeeping: one load per model however many ask, one
  cleanup at a time per model, unload, and an orderly ``close``;
- ``recycle``: the ``Gate`` calls pass while the server restarts, and when a restart on purpose
  is due (memory no model accounts for, issue 16);
- ``process``: ``ServerProcess``, the basics of the child server process (alive, log tail, stop),
  and the probes both use (``free_port``, ``grpc_ready``, ``log_tail``);
- ``cli``: the flags both ``python -m kserve_mesh.runtime.<adapter>`` commands take, and their
  serve-until-signalled loop;
- ``config``: ``AdapterConfig``, the settings both adapters' configs start from;
- ``memory``: the resident memory of a process tree, read from ``/proc`` (what measures a load).

What differs (MLServer's REST repository API and format priming, Triton's repository layout, ONNX
wrapper and restart after a death) stays in each adapter's package.
"""
