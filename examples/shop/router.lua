-- Tier 2: reads and writes the storage replica set's leader through net.box
-- (STORAGE_URI) and answers one line per connection on a text port (TEXT_PORT),
-- for clients without a Tarantool driver:
--   "GET apple\n"    -> "apple 3\n"
--   "PUT kiwi 7\n"   -> "kiwi 7\n"   (written on the leader, replicated to the rest)
--   anything else    -> "ERR <why>\n"
local netbox = require('net.box')
local socket = require('socket')
local log = require('log')

local storage_uri = assert(os.getenv('STORAGE_URI'), 'STORAGE_URI is not set')
local storage = netbox.connect(storage_uri, {reconnect_after = 0.1, wait_connected = 5})
log.info('router: storage at %s, connected: %s', storage_uri, tostring(storage:is_connected()))

local function call(fn)
    if not storage:wait_connected(2) then
        return nil, 'storage ' .. storage_uri .. ' unreachable'
    end
    local ok, row = pcall(fn, storage.space.goods)
    if not ok then
        return nil, tostring(row)
    end
    return row
end

local function price(item)
    local row, err = call(function(goods) return goods:get(item) end)
    if row == nil then
        return nil, err or ('no such item ' .. item)
    end
    return row[2]
end

local function set_price(item, value)
    local row, err = call(function(goods) return goods:replace{item, value} end)
    if row == nil then
        return nil, err
    end
    return row[2]
end
rawset(_G, 'price', price)
rawset(_G, 'set_price', set_price)

socket.tcp_server('0.0.0.0', tonumber(os.getenv('TEXT_PORT') or '3380'), function(client)
    local line = client:read('\n', 5) or ''
    local value, err, item
    local get = line:match('^GET%s+(%S+)')
    local put, number = line:match('^PUT%s+(%S+)%s+(%d+)')
    if get ~= nil then
        item = get
        value, err = price(get)
    elseif put ~= nil then
        item = put
        value, err = set_price(put, tonumber(number))
    else
        err = 'expected GET <item> or PUT <item> <price>'
    end
    client:write(value ~= nil and string.format('%s %s\n', item, value) or ('ERR ' .. err .. '\n'))
end)
