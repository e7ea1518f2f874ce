--- The connection to the chatd daemon: one per Neovim, shared by every chat buffer.
---
--- Connects with `vim.lsp.rpc.connect(socket)` when the daemon's socket answers, else spawns
--- `chatd stdio` (which starts the daemon). Requests made before the connection is initialized are
--- queued here (rpc.connect itself buffers only 10 messages). When the daemon goes away the client says
--- so, fails every pending request, and polls the socket to reconnect; `on_ready` listeners then restore
--- their state (tools, subscriptions).

local M = {}
local H = {}

local uv = vim.uv or vim.loop

--- 'idle' | 'connecting' | 'ready' | 'lost'
M.state = 'idle'
M.server_info = nil
M.last_error = nil

H.rpc = nil
H.queue = {} -- { {method, params, cb} } waiting for 'ready'
H.pending = {} -- our id -> { cb, method }
H.next_id = 0
H.listeners = {} -- method -> { fn }
H.request_handlers = {} -- method -> fn(params, respond)
H.ready_hooks = {} -- fn()
H.lost_hooks = {} -- fn(reason)
H.generation = 0 -- bumps on every new connection, so callbacks of an old one are ignored
H.retry_timer = nil

---@return table config the plugin's `connection` config
local function cfg() return require('chatd').config.connection end

--- The socket path the daemon listens on, resolved as chatd/paths.py does.
function M.socket_path()
  local c = cfg()
  if c.socket and c.socket ~= '' then return vim.fs.normalize(c.socket) end
  local env = vim.env
  if env.CHATD_SOCKET and env.CHATD_SOCKET ~= '' then return vim.fs.normalize(env.CHATD_SOCKET) end
  if env.CHATD_HOME and env.CHATD_HOME ~= '' then
    return vim.fs.joinpath(vim.fs.normalize(env.CHATD_HOME), 'run', 'chatd.sock')
  end
  local base = env.XDG_RUNTIME_DIR
  if not base or base == '' then base = '/tmp/runtime-' .. uv.getuid() end
  return vim.fs.joinpath(base, 'chatd', 'chatd.sock')
end

--- Asks whether something accepts connections on `path`; calls back (scheduled) with ok, err.
function M.probe(path, cb)
  local pipe = uv.new_pipe(false)
  local ok = pcall(pipe.connect, pipe, path, function(err)
    pipe:close()
    vim.schedule(function() cb(err == nil, err) end)
  end)
  if not ok then
    pipe:close()
    vim.schedule(function() cb(false, 'connect failed') end)
  end
end

-- ---------------------------------------------------------------- listeners
--- Subscribe to a daemon notification.
function M.on(method, fn)
  H.listeners[method] = H.listeners[method] or {}
  table.insert(H.listeners[method], fn)
end

--- Answer a daemon->client request. `fn(params, respond)` calls `respond(result, err)` once, now or later.
function M.handle(method, fn) H.request_handlers[method] = fn end

--- Run `fn()` each time a connection becomes ready (first connect and every reconnect).
function M.on_ready(fn) table.insert(H.ready_hooks, fn) end

--- Run `fn(reason)` when the daemon goes away.
function M.on_lost(fn) table.insert(H.lost_hooks, fn) end

-- ---------------------------------------------------------------- requests
--- Send a request; `cb(err, result)` runs on the main loop. Queued until the connection is ready.
--- Connecting starts here if needed. A request cancelled with -32800 gets no callback (see chat/turnEnded).
function M.request(method, params, cb)
  cb = cb or function() end
  if M.state == 'ready' then return H.send(method, params, cb) end
  table.insert(H.queue, { method, params, cb })
  if M.state ~= 'connecting' then M.connect() end
end

--- Send a notification (dropped while disconnected).
function M.notify(method, params)
  if M.state == 'ready' and H.rpc then H.rpc.notify(method, H.params(params)) end
end

--- A request answered synchronously (for completion and health), or nil, err after `timeout` ms.
function M.request_sync(method, params, timeout)
  local done, err, result = false, nil, nil
  M.request(method, params, function(e, r) done, err, result = true, e, r end)
  vim.wait(timeout or 2000, function() return done end, 10)
  if not done then return nil, { message = 'no answer from the daemon within ' .. (timeout or 2000) .. ' ms' } end
  return result, err
end

--- chatd wants named params: an empty Lua table must go out as {} (vim.json would send []).
function H.params(params)
  if params == nil or (type(params) == 'table' and next(params) == nil) then return vim.empty_dict() end
  return params
end

function H.send(method, params, cb)
  H.next_id = H.next_id + 1
  local id, gen = H.next_id, H.generation
  H.pending[id] = { cb = cb, method = method }
  local function finish(err, result)
    local entry = H.pending[id]
    if not entry or gen ~= H.generation then return end
    H.pending[id] = nil
    entry.cb(err, result)
  end
  -- notify_reply_callback fires for every reply, including -32800 (whose callback rpc.lua drops); it
  -- runs just before the callback, so the cleanup waits one more tick
  local ok = H.rpc.request(method, H.params(params), finish, function()
    vim.schedule(function() H.pending[id] = nil end)
  end)
  if not ok then finish({ code = -32099, message = 'not connected to the daemon' }) end
  return id
end

-- ---------------------------------------------------------------- connecting
--- Connect now (if not connected or connecting). `opts.spawn == false` only reconnects to a running daemon.
function M.connect(opts)
  opts = opts or {}
  if M.state == 'ready' or M.state == 'connecting' then return end
  H.stop_retry()
  M.state = 'connecting'
  local c = cfg()
  local sock = M.socket_path()
  local function spawn()
    if opts.spawn == false then return H.failed('the daemon is not running', true) end
    local cmd = vim.list_extend({}, type(c.cmd) == 'table' and c.cmd or { c.cmd })
    table.insert(cmd, 'stdio')
    if vim.fn.executable(cmd[1]) ~= 1 then
      return H.failed(('`%s` not found: install chatd or set connection.cmd in setup()'):format(cmd[1]))
    end
    H.open(function(d) return vim.lsp.rpc.start(cmd, d, { env = c.env }) end)
  end
  if c.transport == 'stdio' then return spawn() end
  M.probe(sock, function(ok)
    if ok then
      H.open(function(d) return vim.lsp.rpc.connect(sock)(d) end)
    elseif c.transport == 'socket' then
      H.failed('cannot connect to ' .. sock, opts.spawn == false)
    else
      spawn()
    end
  end)
end

function H.open(make)
  H.generation = H.generation + 1
  local gen = H.generation
  local dispatchers = {
    notification = function(method, params) -- 0.11 already runs this scheduled, in arrival order
      if gen ~= H.generation then return end
      for _, fn in ipairs(H.listeners[method] or {}) do
        local ok, err = pcall(fn, params)
        if not ok then vim.notify('chatd: ' .. method .. ': ' .. tostring(err), vim.log.levels.ERROR) end
      end
    end,
    server_request = function(method, params) return H.serve(method, params) end,
    on_exit = function() vim.schedule(function() if gen == H.generation then H.lost('the daemon closed the connection') end end) end,
    on_error = function() end,
  }
  local ok, rpc = pcall(make, dispatchers)
  if not ok then return H.failed(tostring(rpc)) end
  H.rpc = rpc
  local info = require('chatd').config
  rpc.request('initialize', {
    clientInfo = { name = 'chatd.nvim', version = require('chatd').version },
    processId = uv.os_getpid(),
    workspaceRoot = uv.cwd(),
    capabilities = { toolApproval = info.tools.approval ~= false },
  }, function(err, result)
    if gen ~= H.generation then return end
    if err then return H.failed('initialize failed: ' .. tostring(err.message or err)) end
    M.server_info = result.serverInfo
    M.state = 'ready'
    M.last_error = nil
    rpc.notify('initialized', vim.empty_dict())
    for _, fn in ipairs(H.ready_hooks) do
      local hook_ok, hook_err = pcall(fn)
      if not hook_ok then vim.notify('chatd: ' .. tostring(hook_err), vim.log.levels.ERROR) end
    end
    local queued = H.queue
    H.queue = {}
    for _, q in ipairs(queued) do H.send(q[1], q[2], q[3]) end
  end)
end

--- A daemon->client request, run by rpc.lua inside a coroutine: wait for `respond` without blocking.
function H.serve(method, params)
  local fn = H.request_handlers[method]
  if not fn then return nil, vim.lsp.rpc.rpc_response_error(-32601, 'chatd.nvim has no handler for ' .. method) end
  local co, answered, result, err = coroutine.running(), false, nil, nil
  local waiting = false
  fn(params, function(r, e)
    if answered then return end
    answered, result, err = true, r, e
    if waiting then vim.schedule(function() coroutine.resume(co) end) end
  end)
  if not answered then
    waiting = true
    coroutine.yield()
  end
  if err then return nil, vim.lsp.rpc.rpc_response_error(-32603, tostring(err)) end
  if result == nil then result = vim.NIL end
  return result, nil
end

function H.failed(reason, quiet)
  M.state = 'lost'
  M.last_error = reason
  H.rpc = nil
  local queued = H.queue
  H.queue = {}
  for _, q in ipairs(queued) do q[3]({ code = -32099, message = reason }) end
  if not quiet then vim.notify('chatd: ' .. reason, vim.log.levels.ERROR) end
  H.schedule_retry()
end

function H.lost(reason)
  if M.state == 'idle' then return end
  H.generation = H.generation + 1
  M.state = 'lost'
  M.last_error = reason
  H.rpc = nil
  local pending = H.pending
  H.pending = {}
  for _, entry in pairs(pending) do pcall(entry.cb, { code = -32099, message = reason }) end
  for _, fn in ipairs(H.lost_hooks) do pcall(fn, reason) end
  H.schedule_retry()
end

--- Poll the socket (never spawning a daemon) until it answers again; user actions connect at once.
function H.schedule_retry()
  local c = cfg()
  if not c.reconnect or H.retry_timer or M.state == 'idle' then return end
  local delay = 100
  H.retry_timer = uv.new_timer()
  local function tick()
    if M.state == 'ready' or M.state == 'connecting' then return H.stop_retry() end
    M.probe(M.socket_path(), function(ok)
      if ok and M.state == 'lost' then
        H.stop_retry()
        M.connect({ spawn = false })
      elseif H.retry_timer then
        delay = math.min(delay * 2, c.reconnect_max_ms or 2000)
        H.retry_timer:start(delay, 0, vim.schedule_wrap(tick))
      end
    end)
  end
  H.retry_timer:start(delay, 0, vim.schedule_wrap(tick))
end

function H.stop_retry()
  if H.retry_timer then
    H.retry_timer:stop()
    H.retry_timer:close()
    H.retry_timer = nil
  end
end

--- Close the connection (tests, :Chatd disconnect); pending requests fail.
function M.disconnect()
  H.stop_retry()
  local rpc = H.rpc
  H.generation = H.generation + 1
  H.rpc, M.state = nil, 'idle'
  for _, entry in pairs(H.pending) do pcall(entry.cb, { code = -32099, message = 'disconnected' }) end
  H.pending = {}
  if rpc then pcall(rpc.terminate) end
end

return M
