-- wrk script of the density benchmark: V2 REST inference spread over many models, open or closed loop.
--
--   DENSITY_TARGETS=host:port,host:port \
--   wrk -tT -cC -dDs --timeout 10s -s wrk_infer.lua URL -- MODE MODELS PREFIX RATE START_MS SEED
--
-- Thread k of wrk talks to target k of DENSITY_TARGETS (round robin), with C / T connections each,
-- so one wrk process spreads its connections over several instances and keeps ONE latency
-- histogram for all of them (percentiles of separate processes could not be merged exactly).
--
-- MODE     "infer": POST /v2/models/<PREFIX><n>/infer, n uniform in [0, MODELS), a pre-encoded body;
--          "health": GET /v2/health/live (a no-op endpoint, to measure the generator itself).
-- RATE     requests/s each wrk thread offers on a fixed schedule (open loop); 0 = closed loop
--          (every connection sends its next request as soon as the previous answer arrives).
-- START_MS the schedule starts this long after start-up, so every connection is open by then.
--
-- Open loop: slot k of the schedule is at t0 + START_MS + k / RATE. Whenever a connection is free,
-- wrk asks delay() how long to wait before its next request; delay() hands out the next free slot
-- of its thread's schedule (each thread has its own Lua state and its own schedule). With C
-- connections each one sends about RATE / C requests/s. A slot handed out after its time (every
-- connection was busy) is sent at once and counted as late; "late" > 0 means the schedule slipped.
-- delay() is only defined in open-loop mode: wrk routes every request through a timer when it is.
--
-- done() prints one line "WRKJSON {...}" with counts, errors and latency percentiles (microseconds,
-- from the moment wrk writes a request to its answer).

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } density_timespec;
int clock_gettime(int clk_id, density_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("density_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local mode, models, prefix = "infer", 1, "m"
local period_ms, start_ms, next_slot = 0, 0, nil
late, late_max_ms = 0, 0  -- globals: done() reads them through thread:get()

local BODY = '{"inputs":[{"name":"input-0","shape":[1],"datatype":"BYTES","data":["x"]}]}'
local paths = {}

function init(args)
  mode = args[1] or "infer"
  models = tonumber(args[2] or "1")
  prefix = args[3] or "m"
  local rate = tonumber(args[4] or "0")
  start_ms = tonumber(args[5] or "0")
  math.randomseed(tonumber(args[6] or "1"))
  if mode == "infer" then
    wrk.method = "POST"
    wrk.body = BODY
    wrk.headers["Content-Type"] = "application/json"
    for n = 0, models - 1 do
      paths[n] = string.format("/v2/models/%s%06d/infer", prefix, n)
    end
  else
    wrk.method = "GET"
    wrk.body = nil
    wrk.path = "/v2/health/live"
  end
  if rate > 0 then
    period_ms = 1000.0 / rate
    delay = function()
      local now = now_ms()
      if next_slot == nil then
        next_slot = now + start_ms
      end
      local slot = next_slot
      next_slot = next_slot + period_ms
      local wait = slot - now
      if wait < 0 then
        if -wait > 1 then
          late = late + 1
          if -wait > late_max_ms then late_max_ms = -wait end
        end
        return 0
      end
      return math.floor(wait + 0.5)
    end
  end
end

function request()
  if mode == "infer" then
    return wrk.format(nil, paths[math.random(0, models - 1)])
  end
  return wrk.format(nil, "/v2/health/live")
end

local threads = {}
local targets = {}
for target in string.gmatch(os.getenv("DENSITY_TARGETS") or "", "[^,]+") do
  local host, port = string.match(target, "^(.+):(%d+)$")
  table.insert(targets, wrk.lookup(host, port)[1])
end

function setup(thread)
  table.insert(threads, thread)
  if #targets > 0 then
    thread.addr = targets[(#threads - 1) % #targets + 1]
  end
end

function done(summary, latency, requests)
  local late_total, late_max = 0, 0
  for _, t in ipairs(threads) do
    late_total = late_total + (t:get("late") or 0)
    late_max = math.max(late_max, t:get("late_max_ms") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
    .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,"late":%d,"late_max_ms":%.3f,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    late_total, late_max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
