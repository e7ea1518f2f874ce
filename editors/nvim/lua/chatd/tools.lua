--- Editor-side tools the model can call (run here, answered on `tool/invoke`), approval prompts
--- (`tool/approve`), and editor context for messages (a selection or range with its file and language).

local client = require('chatd.client')

local M = {}
local H = {}

--- The last buffer the user worked in that is not a chat buffer: what "the current buffer" means to a model.
H.last_code_buf = nil
--- callId -> function() closing an open approval prompt when the daemon settles the call elsewhere
H.open_prompts = {}

local function cfg() return require('chatd').config.tools end

local function is_chat(buf) return vim.b[buf].chatd_conversation ~= nil end

local function buf_path(buf)
  local name = vim.api.nvim_buf_get_name(buf)
  if name == '' then return '[No Name ' .. buf .. ']' end
  return vim.fn.fnamemodify(name, ':~:.')
end

--- Resolve a buffer from a tool argument: a path (relative or absolute), a number, or nothing (current).
function H.resolve(arg)
  if arg == nil or arg == '' or arg == vim.NIL then
    local cur = vim.api.nvim_get_current_buf()
    if not is_chat(cur) and vim.bo[cur].buftype == '' then return cur end
    if H.last_code_buf and vim.api.nvim_buf_is_valid(H.last_code_buf) then return H.last_code_buf end
    return nil, 'no file buffer is open'
  end
  if type(arg) == 'number' or tostring(arg):match('^%d+$') then
    local n = tonumber(arg)
    if vim.api.nvim_buf_is_valid(n) then return n end
  end
  local want = vim.fs.normalize(vim.fn.fnamemodify(tostring(arg), ':p'))
  for _, b in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(b) then
      local name = vim.api.nvim_buf_get_name(b)
      if name ~= '' and (vim.fs.normalize(name) == want or vim.endswith(vim.fs.normalize(name), '/' .. tostring(arg))) then
        return b
      end
    end
  end
  return nil, 'no open buffer named ' .. tostring(arg)
end

-- ---------------------------------------------------------------- the tools
M.defs = {
  {
    name = 'nvim_read_buffer',
    description = 'Read the text of a buffer open in the user\'s Neovim (by default the one they are editing). '
      .. 'Returns the file name, its language and its lines, numbered.',
    parameters = { type = 'object', properties = {
      path = { type = 'string', description = 'file path or buffer number; omit for the current buffer' },
      startLine = { type = 'integer', description = 'first line (1-based), default 1' },
      endLine = { type = 'integer', description = 'last line, default the end' },
    } },
    run = function(args)
      local buf, err = H.resolve(args.path)
      if not buf then error(err, 0) end
      local total = vim.api.nvim_buf_line_count(buf)
      local first = math.max(tonumber(args.startLine) or 1, 1)
      local last = math.min(tonumber(args.endLine) or total, total)
      local lines = vim.api.nvim_buf_get_lines(buf, first - 1, last, false)
      local out = { ('%s (%s, lines %d-%d of %d)'):format(buf_path(buf), vim.bo[buf].filetype ~= '' and vim.bo[buf].filetype or 'text', first, last, total) }
      for i, l in ipairs(lines) do table.insert(out, ('%d: %s'):format(first + i - 1, l)) end
      return table.concat(out, '\n')
    end,
  },
  {
    name = 'nvim_list_buffers',
    description = 'List the files open in the user\'s Neovim: path, language, line count, unsaved changes.',
    parameters = { type = 'object', properties = vim.empty_dict() },
    run = function()
      local out = {}
      for _, b in ipairs(vim.api.nvim_list_bufs()) do
        if vim.bo[b].buflisted and vim.api.nvim_buf_is_loaded(b) and not is_chat(b) and vim.bo[b].buftype == '' then
          table.insert(out, ('%s (%s, %d lines%s)'):format(buf_path(b), vim.bo[b].filetype ~= '' and vim.bo[b].filetype or 'text',
            vim.api.nvim_buf_line_count(b), vim.bo[b].modified and ', modified' or ''))
        end
      end
      return #out > 0 and table.concat(out, '\n') or 'no file buffers are open'
    end,
  },
  {
    name = 'nvim_diagnostics',
    description = 'Diagnostics (errors, warnings) Neovim shows for a buffer, or for every open buffer.',
    parameters = { type = 'object', properties = {
      path = { type = 'string', description = 'file path or buffer number; omit for all buffers' },
    } },
    run = function(args)
      local bufnr
      if args.path and args.path ~= vim.NIL and args.path ~= '' then
        local err
        bufnr, err = H.resolve(args.path)
        if not bufnr then error(err, 0) end
      end
      local out = {}
      for _, d in ipairs(vim.diagnostic.get(bufnr)) do
        table.insert(out, ('%s:%d:%d: %s: %s'):format(buf_path(d.bufnr), d.lnum + 1, d.col + 1,
          (vim.diagnostic.severity[d.severity] or 'INFO'):lower(), d.message))
      end
      return #out > 0 and table.concat(out, '\n') or 'no diagnostics'
    end,
  },
}

--- The tools this Neovim offers: built-ins minus `tools.disable`, plus `tools.extra`.
function M.enabled()
  local c = cfg()
  if c.enabled == false then return {} end
  local out = {}
  for _, def in ipairs(M.defs) do
    if not vim.tbl_contains(c.disable or {}, def.name) then table.insert(out, def) end
  end
  for _, def in ipairs(c.extra or {}) do table.insert(out, def) end
  return out
end

--- Tool names a send offers the model (`tools.send`, default: ours), or nil for none.
function M.send_tools()
  local c = cfg()
  if c.send ~= nil then return (c.send ~= false and #c.send > 0) and c.send or nil end
  local names = vim.tbl_map(function(d) return d.name end, M.enabled())
  return #names > 0 and names or nil
end

function H.register()
  local decls = {}
  for _, def in ipairs(M.enabled()) do
    table.insert(decls, { name = def.name, description = def.description, parameters = def.parameters,
      sideEffects = def.side_effects or false })
  end
  if #decls == 0 then return end
  client.request('tools/register', { tools = decls }, function(err)
    if err then vim.notify('chatd: tools/register: ' .. tostring(err.message), vim.log.levels.WARN) end
  end)
end

function H.invoke(params, respond)
  for _, def in ipairs(M.enabled()) do
    if def.name == params.tool then
      local args = params.arguments
      if type(args) ~= 'table' or args == vim.NIL then args = {} end
      local ok, out = pcall(def.run, args, params)
      if ok then return respond(out) end
      return respond(nil, out)
    end
  end
  respond(nil, 'chatd.nvim has no tool named ' .. tostring(params.tool))
end

-- ---------------------------------------------------------------- approvals
--- Default prompt: vim.ui.select Allow/Deny (any vim.ui.select UI: builtin, telescope, snacks, ...).
function M.default_approve(req, done)
  local args = require('chatd.render').short(req.arguments or {}, 200)
  vim.ui.select({ 'Allow', 'Deny' }, {
    prompt = ('chatd [%s]: run tool %s(%s)?'):format(req.conversation, req.tool, args),
    kind = 'chatd_approval',
  }, function(choice) done(choice == 'Allow') end)
end

function H.approve(params, respond)
  local chat = require('chatd.chat').chats[params.conversation]
  local live = chat and chat:live_for(params.turnId)
  if live then
    table.insert(live.items, { kind = 'line', hl = 'ChatdWarn',
      text = ('> approval asked: %s(%s)'):format(params.tool, require('chatd.render').short(params.arguments or {}, 100)) })
    chat:render_tail(true)
  end
  local answered = false
  H.open_prompts[params.callId] = function()
    -- settled elsewhere: finish this request (the daemon ignores the late answer), ignore the prompt's
    answered = true
    respond({ approved = false })
  end
  local approve = cfg().approve or M.default_approve
  approve(params, function(ok)
    H.open_prompts[params.callId] = nil
    if answered then return end
    answered = true
    respond({ approved = ok and true or false })
  end)
end

--- The daemon settled a call (another client answered, or it timed out): forget our prompt.
function M.settled(call_id)
  local close = H.open_prompts[call_id]
  if close then
    H.open_prompts[call_id] = nil
    close()
  end
end

-- ---------------------------------------------------------------- editor context
--- Markdown for lines `first..last` of `buf`: file name, language, fenced code.
function M.snippet(buf, first, last)
  buf = buf or vim.api.nvim_get_current_buf()
  local lines = vim.api.nvim_buf_get_lines(buf, first - 1, last, false)
  local lang = vim.bo[buf].filetype
  local fence = '```'
  for _, l in ipairs(lines) do
    while l:find(fence, 1, true) do fence = fence .. '`' end
  end
  local where = first == last and ('line %d'):format(first) or ('lines %d-%d'):format(first, last)
  local out = { ('From `%s` (%s%s):'):format(buf_path(buf), where, lang ~= '' and (', ' .. lang) or ''), fence .. lang }
  vim.list_extend(out, lines)
  table.insert(out, fence)
  return table.concat(out, '\n')
end

function M.setup()
  client.handle('tool/invoke', H.invoke)
  client.handle('tool/approve', H.approve)
  client.on_ready(H.register)
  local group = vim.api.nvim_create_augroup('chatd_tools', { clear = true })
  vim.api.nvim_create_autocmd('BufEnter', { group = group, callback = function(ev)
    if not is_chat(ev.buf) and vim.bo[ev.buf].buftype == '' then H.last_code_buf = ev.buf end
  end })
  local cur = vim.api.nvim_get_current_buf()
  if not is_chat(cur) and vim.bo[cur].buftype == '' then H.last_code_buf = cur end
end

return M
