-- Tier 2: uses both replica sets of tier 1 through net.box, on their leaders:
-- storage (the goods, STORAGE_URI) and sessions (the carts, SESSIONS_URI). It
-- answers one line per connection on a text port (TEXT_PORT), for clients
-- without a Tarantool driver:
--   "GET apple\n"       -> "apple 3\n"    the price, from storage
--   "PUT kiwi 7\n"      -> "kiwi 7\n"     a price written to storage
--   "ADD ann apple\n"   -> "ann 3\n"      apple's price (storage) added to ann's cart
--                                         (sessions): the cart's total
--   anything else       -> "ERR <why>\n"
local netbox = require('net.box')
local socket = require('socket')
local log = require('log')

local function connect(variable)
    local uri = assert(os.getenv(variable), variable .. ' is not set')
    local conn = netbox.connect(uri, {reconnect_after = 0.1, wait_connected = 5})
    log.info('router: %s at %s, connected: %s', variable, uri, tostring(conn:is_connected()))
    return {conn = conn, uri = uri}
end
local storage, sessions = connect('STORAGE_URI'), connect('SESSIONS_URI')

-- fn(space) on the leader of `db`; its result, or nil and why.
local function call(db, space, fn)
    if not db.conn:wait_connected(2) then
        return nil, db.uri .. ' unreachable'
    end
    local ok, row = pcall(fn, db.conn.space[space])
    if not ok then
        return nil, tostring(row)
    end
    return row
end

local function price(item)
    local row, err = call(storage, 'goods', function(goods) return goods:get(item) end)
    if row == nil then
        return nil, err or ('no such item ' .. item)
    end
    return row[2]
end

local function set_price(item, value)
    local row, err = call(storage, 'goods', function(goods) return goods:replace{item, value} end)
    return row and row[2], err
end

local function add_to_cart(user, item)
    local value, err = price(item)
    if value == nil then
        return nil, err
    end
    local row
    row, err = call(sessions, 'carts', function(carts)
        carts:upsert({user, value}, {{'+', 2, value}})
        return carts:get(user)
    end)
    return row and row[2], err
end
rawset(_G, 'price', price)

local commands = {
    GET = {'^GET%s+(%S+)%s*$', price},
    PUT = {'^PUT%s+(%S+)%s+(%d+)%s*$', function(item, n) return set_price(item, tonumber(n)) end},
    ADD = {'^ADD%s+(%S+)%s+(%S+)%s*$', add_to_cart},
}

socket.tcp_server('0.0.0.0', tonumber(os.getenv('TEXT_PORT') or '3380'), function(client)
    local line = client:read('\n', 5) or ''
    local command = commands[line:match('^(%u+)') or '']
    local key, arg = nil, nil
    if command ~= nil then
        key, arg = line:match(command[1])
    end
    local value, err
    if key == nil then
        err = 'expected GET <item>, PUT <item> <price> or ADD <user> <item>'
    else
        value, err = command[2](key, arg)
    end
    client:write(value ~= nil and string.format('%s %s\n', key, value) or ('ERR ' .. tostring(err) .. '\n'))
end)
