-- POST each pre-made request of BENCH_POSTS once (path TAB header TAB body, one a line);
-- wrk's threads take alternate lines, so no request is sent twice before the list runs out.
local lines, count, counter = {}, 0, 0
for line in io.lines(os.getenv("BENCH_POSTS")) do count = count + 1; lines[count] = line end
local threads = {}
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
function init(args) counter = id end
function request()
  local line = lines[(counter % count) + 1]
  counter = counter + 2
  local path, header, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
  local name, value = header:match("^([^:]*): (.*)$")
  local headers = {["Content-Type"] = "application/json"}
  headers[name] = value
  return wrk.format("POST", path, headers, body)
end
