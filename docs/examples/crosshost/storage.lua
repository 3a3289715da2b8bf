-- On every member after box.cfg: the leader makes the space the writer fills.
if not box.info.ro then
    local log = box.schema.space.create('log', {if_not_exists = true})
    log:create_index('pk', {if_not_exists = true, parts = {{1, 'unsigned'}}})
    box.schema.user.grant('guest', 'read,write', 'space', 'log', {if_not_exists = true})
end
