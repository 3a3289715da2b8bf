-- Tier 2: reads the storage replica set's leader through net.box (STORAGE_URI)
-- and answers one line per connection on a text port (TEXT_PORT), for clients
-- without a Tarantool driver:  "GET apple\n" -> "apple 3\n", or "ERR <why>\n".
local netbox = require('net.box')
local socket = require('socket')
local log = require('log')

local storage_uri = assert(os.getenv('STORAGE_URI'), 'STORAGE_URI is not set')
local storage = netbox.connect(storage_uri, {reconnect_after = 0.1, wait_connected = 5})
log.info('router: storage at %s, connected: %s', storage_uri, tostring(storage:is_connected()))

local function price(item)
    if not storage:wait_connected(2) then
        return nil, 'storage ' .. storage_uri .. ' unreachable'
    end
    local ok, row = pcall(function() return storage.space.goods:get(item) end)
    if not ok then
        return nil, tostring(row)
    end
    if row == nil then
        return nil, 'no such item ' .. item
    end
    return row[2]
end
rawset(_G, 'price', price)

socket.tcp_server('0.0.0.0', tonumber(os.getenv('TEXT_PORT') or '3380'), function(client)
    local line = client:read('\n', 5)
    local item = line and line:match('^GET%s+(%S+)')
    if item == nil then
        client:write('ERR expected GET <item>\n')
        return
    end
    local value, err = price(item)
    client:write(value ~= nil and string.format('%s %s\n', item, value) or ('ERR ' .. err .. '\n'))
end)
