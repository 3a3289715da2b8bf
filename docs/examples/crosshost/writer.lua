-- The client: inserts 1, 2, 3... into the leader, one at a time, and prints
-- "acked N" once the leader acknowledged N (every id up to N is acknowledged).
local fiber = require('fiber')
local net_box = require('net.box')

local uri = arg[1]
local conn = net_box.connect(uri, {reconnect_after = 0.1, wait_connected = 5})
io.stdout:write('writing to ' .. uri .. '\n')
io.stdout:flush()

local id = 0
while true do
    local ok, err = pcall(conn.space.log.insert, conn.space.log, {id + 1}, {timeout = 1})
    -- A duplicate means an earlier try that timed out did land: acknowledged now.
    if ok or tostring(err):find('Duplicate key') then
        id = id + 1
        io.stdout:write('acked ' .. id .. '\n')
        io.stdout:flush()
    end
    fiber.sleep(0.01)
end
