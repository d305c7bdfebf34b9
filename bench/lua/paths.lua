-- GET each path of paths.txt in turn (one path a line), spread over wrk's threads.
local paths, count, counter = {}, 0, 0
for line in io.lines(os.getenv("BENCH_PATHS")) do count = count + 1; paths[count] = line end
local threads = {}
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
function init(args) counter = id end
function request()
  counter = counter + 2
  return wrk.format("GET", paths[(counter % count) + 1])
end
