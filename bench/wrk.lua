-- wrk script of bench/run: builds the requests of one benchmark client and
-- prints a one-line, machine-readable summary at the end.
--
--   wrk -t1 -c16 -d10s --timeout 60s -s bench/wrk.lua http://127.0.0.1:PORT -- \
--       creds=FILE user=alice xff=fixed:10.200.0.1 count=0
--
-- Arguments (after --, key=value):
--   path=/rest/api/2/myself  request path
--   creds=FILE     one credential a line; each request sends the next one, as
--                  "Authorization: Basic base64(user:line)", cycling through
--                  the file. A file of one line is a fixed credential.
--   randpw=N       instead of creds: N random 20-character passwords made here
--   user=NAME      the Basic-auth user name (default alice)
--   xff=none|fixed:IP|random
--                  X-Forwarded-For: none, always IP, or a random address in
--                  10.0.0.0/9 for every request (a different client each time,
--                  as the gate sees it behind trusted_proxies 127.0.0.1/32)
--   count=0|1      1: count the answers by status (401, 403, 429, ...) in a
--                  response() hook. wrk parses headers and body for that, which
--                  costs wrk some CPU, so clients whose answers should all be
--                  2xx leave it off and rely on wrk's own count of >399
--                  answers instead.
--
-- Requests are built once in init(); request() only picks the next one (and,
-- with xff=random, appends a random address), so wrk stays cheap per request.

local reqs = {}
local nreqs = 0
local idx = 0
local random_ip = false
local rnd = math.random

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local c1 = math.floor(n / 262144) % 64
      local c2 = math.floor(n / 4096) % 64
      local c3 = math.floor(n / 64) % 64
      local c4 = n % 64
      out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1) ..
         (b and b64chars:sub(c3 + 1, c3 + 1) or "=") ..
         (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
   end
   return table.concat(out)
end

-- Counters read by done() through thread:get(); globals on purpose.
n2xx, n401, n403, n429, nother = 0, 0, 0, 0, 0

function init(args)
   local cfg = { path = "/rest/api/2/myself", user = "alice", xff = "none", count = "0" }
   for _, a in ipairs(args) do
      local k, v = a:match("^([%w_]+)=(.*)$")
      if not k then
         error("wrk.lua: argument " .. a .. " is not key=value")
      end
      cfg[k] = v
   end
   math.randomseed(os.time() + math.floor(os.clock() * 1e6))

   local secrets = {}
   if cfg.creds then
      for line in io.lines(cfg.creds) do
         if line ~= "" then
            secrets[#secrets + 1] = line
         end
      end
   elseif cfg.randpw then
      local alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
      for i = 1, tonumber(cfg.randpw) do
         local t = {}
         for j = 1, 20 do
            local p = rnd(1, #alnum)
            t[j] = alnum:sub(p, p)
         end
         secrets[i] = table.concat(t)
      end
   end

   local head = "GET " .. cfg.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"] .. "\r\n"
   local tail = "\r\n"
   if cfg.xff == "random" then
      random_ip = true
      tail = ""
   elseif cfg.xff:sub(1, 6) == "fixed:" then
      tail = "X-Forwarded-For: " .. cfg.xff:sub(7) .. "\r\n\r\n"
   elseif cfg.xff ~= "none" then
      error("wrk.lua: xff must be none, fixed:IP or random, not " .. cfg.xff)
   end

   if #secrets == 0 then
      reqs[1] = head .. tail
   else
      for i, s in ipairs(secrets) do
         reqs[i] = head .. "Authorization: Basic " .. b64(cfg.user .. ":" .. s) .. "\r\n" .. tail
      end
   end
   nreqs = #reqs

   if cfg.count ~= "1" then
      response = nil -- wrk then skips parsing headers and bodies
   end
end

function request()
   idx = idx + 1
   if idx > nreqs then
      idx = 1
   end
   if random_ip then
      return reqs[idx] .. "X-Forwarded-For: 10." .. rnd(0, 127) .. "." .. rnd(0, 255) .. "." ..
         rnd(1, 254) .. "\r\n\r\n"
   end
   return reqs[idx]
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      n2xx = n2xx + 1
   elseif status == 401 then
      n401 = n401 + 1
   elseif status == 403 then
      n403 = n403 + 1
   elseif status == 429 then
      n429 = n429 + 1
   else
      nother = nother + 1
   end
end

local threads = {}

function setup(thread)
   threads[#threads + 1] = thread
end

function done(summary, latency, requests)
   local c = { n2xx = 0, n401 = 0, n403 = 0, n429 = 0, nother = 0 }
   for _, t in ipairs(threads) do
      for k in pairs(c) do
         c[k] = c[k] + (t:get(k) or 0)
      end
   end
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d " ..
      "timeouts=%d err_connect=%d err_read=%d err_write=%d status_gt399=%d " ..
      "n2xx=%d n401=%d n403=%d n429=%d nother=%d\n",
      summary.requests, summary.duration,
      summary.requests > 0 and latency:percentile(50) or 0,
      summary.requests > 0 and latency:percentile(99) or 0,
      summary.requests > 0 and latency.max or 0,
      e.timeout, e.connect, e.read, e.write, e.status,
      c.n2xx, c.n401, c.n403, c.n429, c.nother))
end
