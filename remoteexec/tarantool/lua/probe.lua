-- remoteexec's probe server and helpers, run inside tarantool by init.lua.
-- Package data of the master (remoteexec.tarantool.scripts): inlined into every
-- generated init.lua. Free of string interpolation: the values it needs are
-- assigned above it in init.lua as serialised Lua literals.
local ffi = require('ffi')
local fio = require('fio')
local fiber = require('fiber')
local json = require('json')
local socket = require('socket')

-- Our own JSON writer: the builtin one prints 14 significant digits, emits
-- bare nan/inf that no JSON parser accepts and needs options to survive
-- functions and cdata. Strings still go through json.encode for escaping.
local MAX_DEPTH = 64

local function enc_number(v)
    if v ~= v then return 'NaN' end
    if v == math.huge then return 'Infinity' end
    if v == -math.huge then return '-Infinity' end
    if v == math.floor(v) and v > -2^53 and v < 2^53 then
        if v == 0 and 1 / v < 0 then return '-0.0' end
        return string.format('%d', v)
    end
    for _, fmt in ipairs({'%.15g', '%.16g', '%.17g'}) do
        local s = string.format(fmt, v)
        if tonumber(s) == v then return s end
    end
    return string.format('%.17g', v)
end

local enc

local function enc_table(v, out, depth, seen)
    if seen[v] then error('cannot encode result: circular reference', 0) end
    if depth > MAX_DEPTH then error('cannot encode result: nested too deep', 0) end
    local mt = getmetatable(v)
    local mode = type(mt) == 'table' and rawget(mt, '__serialize') or nil
    if type(mode) == 'function' then
        return enc(mode(v), out, depth + 1, seen)
    end
    seen[v] = true
    local count, max, positive = 0, 0, true
    for k in pairs(v) do
        count = count + 1
        if type(k) == 'number' and k >= 1 and k == math.floor(k) then
            if k > max then max = k end
        else
            positive = false
        end
    end
    local as_array
    if mode == 'array' or mode == 'seq' or mode == 'sequence' then
        as_array = true
    elseif mode == 'map' or mode == 'mapping' then
        as_array = false
    else
        -- The same rule as Tarantool's serializers: dense enough keys 1..n.
        as_array = positive and (max <= 10 or max <= 2 * count)
    end
    if as_array then
        out[#out + 1] = '['
        for i = 1, max do
            if i > 1 then out[#out + 1] = ',' end
            enc(v[i], out, depth + 1, seen)
        end
        out[#out + 1] = ']'
    else
        out[#out + 1] = '{'
        local first = true
        for k, item in pairs(v) do
            if not first then out[#out + 1] = ',' end
            first = false
            local key = type(k) == 'number' and enc_number(k) or tostring(k)
            out[#out + 1] = json.encode(key)
            out[#out + 1] = ':'
            enc(item, out, depth + 1, seen)
        end
        out[#out + 1] = '}'
    end
    seen[v] = nil
end

enc = function(v, out, depth, seen)
    local t = type(v)
    if v == nil then  -- also box.NULL: a NULL cdata equals nil
        out[#out + 1] = 'null'
    elseif t == 'boolean' then
        out[#out + 1] = v and 'true' or 'false'
    elseif t == 'number' then
        out[#out + 1] = enc_number(v)
    elseif t == 'string' then
        out[#out + 1] = json.encode(v)
    elseif t == 'table' then
        enc_table(v, out, depth, seen)
    elseif t == 'cdata' and (ffi.istype('int64_t', v) or ffi.istype('uint64_t', v)) then
        out[#out + 1] = (tostring(v):gsub('U?LL$', ''))
    elseif t == 'cdata' and box.tuple ~= nil and box.tuple.is ~= nil and box.tuple.is(v) then
        enc(v:totable(), out, depth + 1, seen)
    else
        -- decimal, uuid, functions, fibers...: their text form.
        out[#out + 1] = json.encode(tostring(v))
    end
end

local function encode_values(values, n)
    local out = {'['}
    for i = 1, n do
        if i > 1 then out[#out + 1] = ',' end
        enc(values[i], out, 0, {})
    end
    out[#out + 1] = ']'
    return table.concat(out)
end

local function pack(...)
    return {n = select('#', ...), ...}
end

local function on_error(err)
    -- Keep the user's frames only: cut where the probe machinery begins.
    local trace = debug.traceback('', 2):gsub('^\n', '')
    local cut = trace:find('\n%s*%[C%]: in function \'xpcall\'')
    local info = {traceback = cut and trace:sub(1, cut - 1) or trace}
    if type(err) == 'cdata' and box.error ~= nil and err.type ~= nil then
        info.message = tostring(err.message)
        info.type = tostring(err.type)
        info.code = tonumber(err.code)
    elseif type(err) == 'table' then
        local ok, text = pcall(json.encode, err)
        info.message = ok and text or tostring(err)
    else
        info.message = tostring(err)
    end
    return info
end

local function reply_error(id, kind, message, extra)
    local r = {id = id, ok = false, kind = kind, error = message}
    for k, v in pairs(extra or {}) do r[k] = v end
    local out = {}
    enc(r, out, 0, {})
    return table.concat(out)
end

local function handle(line)
    local ok, req = pcall(json.decode, line)
    if not ok or type(req) ~= 'table' then
        return reply_error(nil, 'protocol', 'bad request: ' .. tostring(req))
    end
    local id = req.id
    if type(req.lua) ~= 'string' then
        return reply_error(id, 'protocol', 'bad request: "lua" must be a string')
    end
    local args = req.args
    if args == nil then args = {} end
    if type(args) ~= 'table' then
        return reply_error(id, 'protocol', 'bad request: "args" must be an array')
    end
    -- Mode 't': Lua source only, never bytecode.
    local fn, err = load(req.lua, '=probe', 't')
    if fn == nil then
        return reply_error(id, 'lua', tostring(err))
    end
    -- JSON null decodes to box.NULL, which is truthy: a top-level null
    -- argument is Lua's nil. "n" keeps the count (trailing nils too).
    local n = tonumber(req.n) or #args
    for i = 1, n do
        if args[i] == nil then args[i] = nil end
    end
    local r = pack(xpcall(fn, on_error, unpack(args, 1, n)))
    if not r[1] then
        local info = r[2]
        return reply_error(id, 'lua', info.message, {
            error_type = info.type, error_code = info.code, traceback = info.traceback,
        })
    end
    local values = {}
    for i = 2, r.n do values[i - 1] = r[i] end
    local okenc, result = pcall(encode_values, values, r.n - 1)
    if not okenc then
        return reply_error(id, 'lua', tostring(result))
    end
    local head = {}
    enc(id, head, 0, {})
    return '{"id":' .. table.concat(head) .. ',"ok":true,"result":' .. result .. '}'
end

local function serve(s)
    pcall(function() fiber.self():name('rx_probe') end)
    while true do
        local line = s:read('\n')
        if line == nil or line == '' then break end
        local ok, reply = pcall(handle, line)
        if not ok then
            reply = reply_error(nil, 'protocol', 'probe failure: ' .. tostring(reply))
        end
        if not s:write(reply .. '\n') then break end
    end
    -- socket.tcp_server closes the connection when this handler returns.
end

local function start_probe(path)
    -- Refuse a socket another live process still serves: that is someone else's
    -- instance, never ours. A stale file (nobody listening) is replaced.
    if fio.path.lexists(path) then
        local peer = socket.tcp_connect('unix/', path, 0.5)
        if peer ~= nil then
            peer:close()
            error('remoteexec: probe socket ' .. path .. ' is served by another process', 0)
        end
        fio.unlink(path)
    end
    local old = fio.umask(tonumber('077', 8))
    local server, err = socket.tcp_server('unix/', path, serve)
    fio.umask(old)
    if server == nil then
        error('remoteexec: cannot listen on probe socket ' .. path .. ': ' .. tostring(err), 0)
    end
    -- The umask already kept others out (0700); 0600 is the conventional mode.
    fio.chmod(path, tonumber('600', 8))
    return server
end

local function log_fatal(log_path, message)
    -- box.cfg may fail before the log is open; write the reason there anyway
    -- (in Tarantool's own line format) so one file tells the whole story.
    if type(log_path) ~= 'string' or log_path:find('^%a+:') then return end
    local f = io.open(log_path, 'a')
    if f == nil then return end
    local now = fiber.time()
    local stamp = os.date('%Y-%m-%d %H:%M:%S', math.floor(now))
    f:write(string.format('%s.%03d [%d] main/init.lua F> %s\n', stamp,
        math.floor((now % 1) * 1000), tonumber(ffi.C.getpid()), message))
    f:close()
end
pcall(ffi.cdef, 'int getpid(void);')
