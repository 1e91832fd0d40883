-- wrk script for bench/http.sh (used only with STATUS_CODES=1): counts responses by HTTP
-- status so that non-2xx answers (504 from the relay, for example) can be told apart.
-- A response() callback costs wrk some throughput, so the default run does not load this.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  codes = {}
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("codes")
    if c then
      for status, n in pairs(c) do
        total[status] = (total[status] or 0) + n
      end
    end
  end
  local keys = {}
  for status in pairs(total) do table.insert(keys, status) end
  table.sort(keys)
  local parts = {}
  for _, status in ipairs(keys) do
    table.insert(parts, status .. "=" .. total[status])
  end
  io.write("Status codes: " .. table.concat(parts, " ") .. "\n")
end
