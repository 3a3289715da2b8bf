-- box.info as plain data, for remoteexec's probe (remoteexec.target.tarantool.boxinfo).
-- Sent as source by the master on every call: run by the probe server, it returns one table.
-- Arguments (all optional): hold, since, read_only, peers. With hold > 0 it first waits, in
-- this fiber, up to hold seconds until the readiness layer (the first one not reached, as the
-- host's wait_instance names them) is no longer `since`: one long poll instead of a probe
-- every few milliseconds, so a member's start costs little CPU beside its own bootstrap.
local hold, since, want_ro, peers_wanted = ...
local function layer()
    local ok, st = pcall(function() return box.info.status end)
    if not ok or st ~= 'running' then return 'running' end
    if rawget(_G, 'rx_app_done') ~= true then return 'app' end
    if want_ro ~= nil and box.info.ro ~= want_ro then return 'ro' end
    local by_uuid = {}
    for _, peer in pairs(box.info.replication) do by_uuid[peer.uuid] = peer end
    for _, uuid in ipairs(peers_wanted or {}) do
        local peer = by_uuid[uuid] or {}
        for _, link in ipairs({peer.upstream, peer.downstream}) do
            if link == nil or link.status ~= 'follow' then return 'mesh' end
        end
    end
    return 'ready'
end
if type(hold) == 'number' and hold > 0 then
    local fiber = require('fiber')
    local give_up = fiber.clock() + hold
    -- Bounded by time (hold) and, against a stalled clock, by count.
    for _ = 1, math.ceil(hold / 0.002) + 1 do
        local ok, now = pcall(layer)
        if ok and now ~= since or fiber.clock() >= give_up then break end
        fiber.sleep(0.002)
    end
end
local function get(f)
    local ok, v = pcall(f)
    if ok then return v end
    return nil
end
local function pairs_of(vclock)
    local out = {}
    for id, lsn in pairs(vclock or {}) do out[#out + 1] = {id, lsn} end
    return out
end
local pid = get(function() return require('tarantool').pid() end)
local ok_status, status = pcall(function() return box.info.status end)
if not ok_status then
    return {status = 'unconfigured', configured = false, pid = pid}
end
local info = box.info
local r = {
    -- box.cfg stays a function until the first box.cfg{} has returned.
    configured = type(box.cfg) ~= 'function',
    status = status,
    ro = get(function() return info.ro end),
    ro_reason = get(function() return info.ro_reason end),
    id = get(function() return info.id end),
    uuid = get(function() return info.uuid end),
    version = get(function() return info.version end),
    pid = get(function() return info.pid end) or pid,
    lsn = get(function() return info.lsn end),
    uptime = get(function() return info.uptime end),
    cluster_uuid = get(function() return info.cluster.uuid end),
    vclock = pairs_of(get(function() return info.vclock end)),
    read_only_cfg = get(function() return box.cfg.read_only end),
    -- Set by remoteexec's init.lua once app_lua has returned.
    app_done = rawget(_G, 'rx_app_done') == true,
}
local listen = get(function() return info.listen end)
-- 2.6 shows 'unix/:(socket)' for unix sockets; the configured value says more.
if listen == nil or type(listen) == 'string' and listen:find('(socket)', 1, true) then
    listen = get(function() return box.cfg.listen end)
end
r.listen = listen
local election = get(function() return info.election end)
if type(election) == 'table' then
    r.election = {state = election.state, term = election.term, leader = election.leader,
                  vote = election.vote}
end
local peers = {}
for _, peer in pairs(get(function() return info.replication end) or {}) do
    local p = {id = peer.id, uuid = peer.uuid, lsn = peer.lsn}
    if peer.upstream ~= nil then
        local u = peer.upstream
        p.upstream = {status = u.status, message = u.message, lag = u.lag, idle = u.idle,
                      peer = u.peer}
    end
    if peer.downstream ~= nil then
        local d = peer.downstream
        p.downstream = {status = d.status, message = d.message, idle = d.idle, lag = d.lag,
                        vclock = pairs_of(d.vclock)}
    end
    peers[#peers + 1] = p
end
table.sort(peers, function(a, b) return (a.id or 0) < (b.id or 0) end)
r.replication = peers
return r
