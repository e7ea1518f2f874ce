--- Turning conversation state into markdown lines: role headers, messages, tool calls, live turn, notes.
--- Pure functions of data (no buffer access), so what a chat buffer shows is easy to test and reason about.

local M = {}

M.USER_HEADER = '## You'

--- '## Assistant (model)'
function M.assistant_header(model)
  return '## Assistant' .. ((model and model ~= '') and (' (' .. model .. ')') or '')
end

local function split(text)
  return vim.split(text or '', '\n', { plain = true })
end

local function short(value, limit)
  local s = type(value) == 'string' and value or vim.json.encode(value)
  s = s:gsub('\n', ' ')
  limit = limit or 120
  if #s > limit then s = s:sub(1, limit - 1) .. '…' end
  return s
end
M.short = short

function M.tool_call_line(name, arguments)
  local args = (arguments == nil or vim.tbl_isempty(arguments)) and '' or short(arguments, 100)
  return ('> tool call: %s(%s)'):format(name, args)
end

function M.tool_result_line(name, output, is_error, decision)
  local tag = is_error and 'tool error' or 'tool result'
  if decision == 'approved' then tag = tag .. ', approved' end
  return ('> %s: %s → %s'):format(tag, name, short(output, 160))
end

--- Append `lines` (with highlight group `hl` for each, or nil) to the accumulator.
local function push(acc, lines, hl)
  for _, l in ipairs(lines) do
    table.insert(acc.lines, l)
    acc.hl[#acc.lines] = hl
  end
end

local function push_blank(acc)
  if #acc.lines > 0 and acc.lines[#acc.lines] ~= '' then push(acc, { '' }) end
end

--- The committed history plus notes placed after the message they follow.
--- `state`: { messages, notes = { {after_seq, lines, hl} } }
function M.history(state, acc)
  acc = acc or { lines = {}, hl = {} }
  local prev_role, prev_turn = nil, nil
  local function notes_after(seq)
    for _, n in ipairs(state.notes) do
      if n.after_seq == seq then
        push_blank(acc)
        push(acc, n.lines, n.hl or 'ChatdNote')
        prev_role = 'note'
      end
    end
  end
  notes_after(0)
  for _, m in ipairs(state.messages) do
    if m.role == 'system' then
      push_blank(acc)
      push(acc, { '> system: ' .. short(m.text, 200) }, 'ChatdNote')
    elseif m.role == 'user' then
      push_blank(acc)
      push(acc, { M.USER_HEADER }, 'ChatdUser')
      push(acc, split(m.text))
    else
      local same = (prev_role == 'assistant' or prev_role == 'tool') and prev_turn == m.turnId
      if not same then
        push_blank(acc)
        push(acc, { M.assistant_header(m.model) }, 'ChatdAssistant')
      end
      for _, part in ipairs(m.parts or {}) do
        if part.type == 'text' then
          push(acc, split(part.text))
        elseif part.type == 'toolCall' then
          push(acc, { M.tool_call_line(part.name, part.arguments) }, 'ChatdTool')
        elseif part.type == 'toolResult' then
          push(acc, { M.tool_result_line(part.name, part.output, part.isError) }, part.isError and 'ChatdError' or 'ChatdTool')
        end
      end
      if not m.parts or #m.parts == 0 then push(acc, split(m.text)) end
    end
    prev_role, prev_turn = m.role, m.turnId
    notes_after(m.seq)
  end
  return acc
end

--- The turn still streaming: its user message, then the reply so far (text and tool lines).
--- `live`: { user = {text}, model, items = { {kind='text', text} | {kind='line', text, hl} } }
function M.live(live, acc)
  acc = acc or { lines = {}, hl = {} }
  push_blank(acc)
  push(acc, { M.USER_HEADER }, 'ChatdUser')
  push(acc, split(live.user and live.user.text or ''))
  push_blank(acc)
  push(acc, { M.assistant_header(live.model) }, 'ChatdAssistant')
  local any = false
  for _, item in ipairs(live.items) do
    if item.kind == 'text' then
      push(acc, split(item.text))
    else
      push(acc, { item.text }, item.hl or 'ChatdNote')
    end
    any = true
  end
  if not any then push(acc, { '…' }, 'ChatdStreaming') end
  return acc
end

--- Sends of ours the daemon has not started yet (queued behind another client's turn).
function M.pending(pending, acc)
  acc = acc or { lines = {}, hl = {} }
  for _, text in ipairs(pending) do
    push_blank(acc)
    push(acc, { M.USER_HEADER .. ' (waiting)' }, 'ChatdUser')
    push(acc, split(text))
  end
  return acc
end

--- What follows the history: the live turn, pending sends, then one blank line before the input header.
--- `prev_blank` says whether the history ends with a blank line (or is empty).
function M.tail(state, prev_blank)
  local acc = { lines = {}, hl = {} }
  if not prev_blank then push(acc, { '' }) end
  if state.live then M.live(state.live, acc) end
  M.pending(state.pending, acc)
  if #acc.lines > 0 then push_blank(acc) end
  return acc
end

--- "answered by X after Y failed: reason" for a turn whose earlier attempts failed.
function M.fallback_note(model, failures)
  local parts = {}
  for _, f in ipairs(failures) do
    table.insert(parts, ('%s failed: %s'):format(f.model, short(f.reason or 'error', 120)))
  end
  return ('> answered by %s after %s'):format(model or '?', table.concat(parts, '; '))
end

return M
