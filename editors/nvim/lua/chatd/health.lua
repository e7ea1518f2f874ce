--- :checkhealth chatd — Neovim version, the chatd executable, the socket, the daemon and its providers.

local M = {}

function M.check()
  local h = vim.health
  local chatd = require('chatd')
  local client = require('chatd.client')
  local c = chatd.config.connection

  h.start('chatd.nvim ' .. chatd.version)
  if vim.fn.has('nvim-0.10') == 1 then
    h.ok('Neovim ' .. tostring(vim.version()))
  else
    h.error('Neovim 0.10 or newer is needed')
  end

  h.start('daemon')
  local cmd = type(c.cmd) == 'table' and c.cmd or { c.cmd }
  if vim.fn.executable(cmd[1]) == 1 then
    h.ok(('`%s` found: %s (the version is the daemon\'s, below)'):format(cmd[1], vim.fn.exepath(cmd[1])))
  elseif c.transport == 'socket' then
    h.info(('`%s` not found (not needed: transport is "socket")'):format(cmd[1]))
  else
    h.error(('`%s` not found'):format(cmd[1]), { 'install chatd (pip install chatd) or set connection.cmd in setup()' })
  end

  local sock = client.socket_path()
  local probed, reachable = false, false
  client.probe(sock, function(ok) probed, reachable = true, ok end)
  vim.wait(2000, function() return probed end, 10)
  if reachable then
    h.ok('socket reachable: ' .. sock)
  else
    h.warn('no daemon answers on ' .. sock, { 'it starts on demand (`chatd stdio`), or run `chatd serve`' })
  end
  h.info(('transport: %s; connection: %s%s'):format(c.transport, client.state,
    client.last_error and (' (' .. client.last_error .. ')') or ''))

  if not reachable and client.state ~= 'ready' then return end
  local status, err = client.request_sync('daemon/status', nil, 3000)
  if not status then
    return h.error('daemon/status failed: ' .. tostring(err and err.message))
  end
  h.ok(('daemon %s (protocol %d), pid %d, up %ds, %d connections, %d turns running'):format(
    status.version, status.protocolVersion, status.pid, status.uptimeS, status.connections, status.activeTurns))
  h.info('store: ' .. tostring(status.storePath))

  h.start('providers')
  local names = vim.tbl_keys(status.providers or {})
  table.sort(names)
  -- daemon/status says "key present" for local providers that need none; they prove nothing here
  local keyless = { echo = true, ollama = true, llamacpp = true, lmstudio = true, vllm = true }
  local any, without = false, {}
  for _, name in ipairs(names) do
    if keyless[name] then
      h.info(name .. ': local, needs no key')
    elseif status.providers[name] then
      any = true
      h.ok(name .. ': key present')
    else
      table.insert(without, name)
    end
  end
  if #without > 0 then h.info('no key: ' .. table.concat(without, ', ')) end
  if not any then
    h.warn('no provider has a key: replies come from the offline `echo` model',
      { 'set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY where the daemon starts' })
  end

  h.start('tools')
  local tools = require('chatd.tools').enabled()
  h.info(#tools .. ' editor tools offered: ' .. table.concat(vim.tbl_map(function(t) return t.name end, tools), ', '))
  h.info('approval prompts: ' .. (chatd.config.tools.approval ~= false and 'answered here' or 'off'))
end

return M
