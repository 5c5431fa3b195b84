-- egcfg for Neovim 0.7+: starts the egcfg language server for Python buffers, shows streamed
-- completion lines as ghost text (virtual lines), keeps the server's status for the status line,
-- shows the values of the last test run as inlay hints (Neovim 0.10+) and the test lenses, and adds
-- :EgcfgComplete, :EgcfgFix, :EgcfgCancel, :EgcfgTrace and :EgcfgStatus.
--
-- Neovim 0.7 has no vim.lsp.start, no inline completion and no inlay hints: this uses
-- vim.lsp.start_client + vim.lsp.buf_attach_client, the server's egcfg.completeWithTests command,
-- and, for the values, the server's Hint diagnostics (shown as virtual text by vim.diagnostic).
--
--   require("egcfg").setup({
--     cmd = { "egcfg", "serve" },                 -- or { "python", "-m", "lsp_server" }
--     settings = { model = "/path/to/model", device = "auto", testSeconds = 5 },
--   })

local M = {}

M.config = {
  cmd = { "egcfg", "serve" },
  settings = {},
  root_markers = { "pyproject.toml", "setup.py", "setup.cfg", ".git" },
  filetypes = { "python" },
}
M.client_id = nil
M.status = { state = "idle", message = "" }
M.lines = {}          -- requestId -> list of streamed line payloads
M.namespace = vim.api.nvim_create_namespace("egcfg")
-- Inlay hints came with Neovim 0.10 (vim.lsp.inlay_hint); older versions show the values as Hint
-- diagnostics (virtual text) and in the hover instead.
M.inlay_hints = vim.lsp.inlay_hint ~= nil
M.notices = {}

local function find_root(path)
  local dir = vim.fn.fnamemodify(path, ":p:h")
  while dir and dir ~= "/" do
    for _, marker in ipairs(M.config.root_markers) do
      if vim.loop.fs_stat(dir .. "/" .. marker) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ":h")
    if parent == dir then break end
    dir = parent
  end
  return vim.fn.getcwd()
end

-- Ghost text: the body streamed so far, as virtual lines below the cursor's line.
local function show_ghost(payload)
  local bufnr = vim.uri_to_bufnr(payload.uri)
  if not vim.api.nvim_buf_is_loaded(bufnr) then return end
  local virt = {}
  for _, text in ipairs(vim.split(payload.body or payload.text or "", "\n", { plain = true })) do
    if text ~= "" then table.insert(virt, { { text, "Comment" } }) end
  end
  vim.api.nvim_buf_clear_namespace(bufnr, M.namespace, 0, -1)
  local line = math.max(payload.position.line - 1, 0)
  pcall(vim.api.nvim_buf_set_extmark, bufnr, M.namespace, line, 0, { virt_lines = virt })
end

function M.clear_ghost(bufnr)
  vim.api.nvim_buf_clear_namespace(bufnr or 0, M.namespace, 0, -1)
end

M.handlers = {
  ["egcfg/status"] = function(_, result)
    M.status = result
    vim.g.egcfg_status = result.state .. (result.message ~= "" and (": " .. result.message) or "")
  end,
  ["egcfg/completionLine"] = function(_, result)
    M.lines[result.requestId] = M.lines[result.requestId] or {}
    table.insert(M.lines[result.requestId], result)
    show_ghost(result)
  end,
}

-- For the status line: %{v:lua.require'egcfg'.statusline()}
function M.statusline()
  local s = M.status
  if s.state == "running" and s.total > 0 then
    return string.format("egcfg: %s line %d, %d/%d tests", s.agent, s.line, s.passed, s.total)
  end
  return "egcfg: " .. (s.state or "idle")
end

local function notice(message)
  if not vim.tbl_contains(M.notices, message) then
    table.insert(M.notices, message)
    vim.notify("egcfg: " .. message, vim.log.levels.INFO)
  end
end

-- Values at the ends of lines: inlay hints where Neovim has them, else say where they are.
local function show_values(bufnr)
  if M.inlay_hints then
    -- 0.10: enable(bufnr, true) in early builds, enable(true, { bufnr = bufnr }) since
    if not pcall(vim.lsp.inlay_hint.enable, true, { bufnr = bufnr }) then
      pcall(vim.lsp.inlay_hint.enable, bufnr, true)
    end
  else
    notice("this Neovim (" .. tostring(vim.version().major) .. "." .. tostring(vim.version().minor) ..
      ") has no inlay hints (0.10+): the values show as hint diagnostics and in the hover (K)")
  end
end

local function on_attach(client, bufnr)
  show_values(bufnr)
  if client.server_capabilities.codeLensProvider then
    vim.api.nvim_create_autocmd({ "BufEnter", "BufWritePost", "CursorHold" }, {
      group = vim.api.nvim_create_augroup("egcfg-lens-" .. bufnr, { clear = true }),
      buffer = bufnr,
      callback = function() pcall(vim.lsp.codelens.refresh) end,
    })
    pcall(vim.lsp.codelens.refresh)
  end
end

function M.start(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  if not M.client_id or not vim.lsp.get_client_by_id(M.client_id) then
    local root = find_root(vim.api.nvim_buf_get_name(bufnr))
    M.client_id = vim.lsp.start_client({
      name = "egcfg",
      cmd = M.config.cmd,
      cmd_env = M.config.cmd_env,
      root_dir = root,
      workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
      init_options = { egcfg = M.config.settings },
      settings = { egcfg = M.config.settings },
      handlers = M.handlers,
      on_attach = on_attach,
    })
  end
  if M.client_id then
    vim.lsp.buf_attach_client(bufnr, M.client_id)
  end
  return M.client_id
end

function M.client()
  return M.client_id and vim.lsp.get_client_by_id(M.client_id)
end

local function cursor_args()
  local pos = vim.api.nvim_win_get_cursor(0)
  return { uri = vim.uri_from_bufnr(0), line = pos[1] - 1, character = pos[2] }
end

-- Replace the function's body from the answer's line with the answer of egcfg.completeWithTests or
-- egcfg.regenerateFrom (its range runs to the end of the old body; `u` takes it back).
function M.apply(bufnr, answer)
  if not answer or answer.code == nil or answer.code == "" then
    vim.notify("egcfg: " .. ((answer and answer.error) or "no completion"), vim.log.levels.WARN)
    return false
  end
  local edit = { range = answer.range, newText = answer.code }
  vim.lsp.util.apply_text_edits({ edit }, bufnr, "utf-16")
  M.clear_ghost(bufnr)
  vim.notify(string.format("egcfg: %d/%d tests pass (agent %s)", answer.passed, answer.total, answer.agent))
  return true
end

function M.complete(timeout_ms)
  local client = M.client()
  if not client then return nil end
  local bufnr = vim.api.nvim_get_current_buf()
  local params = { command = "egcfg.completeWithTests", arguments = { cursor_args() } }
  if timeout_ms then  -- synchronous (scripts, tests)
    local response = client.request_sync("workspace/executeCommand", params, timeout_ms, bufnr)
    local answer = response and response.result
    M.apply(bufnr, answer)
    return answer
  end
  client.request("workspace/executeCommand", params, function(err, answer)
    if err then
      vim.notify("egcfg: " .. err.message, vim.log.levels.ERROR)
    else
      M.apply(bufnr, answer)
    end
  end, bufnr)
end

-- :EgcfgFix: keep the function's lines above the cursor, regenerate the rest guided by the tests.
function M.regenerate(line, timeout_ms)
  local client = M.client()
  if not client then return nil end
  local bufnr = vim.api.nvim_get_current_buf()
  line = line or (vim.api.nvim_win_get_cursor(0)[1] - 1)
  local params = { command = "egcfg.regenerateFrom", arguments = { { uri = vim.uri_from_bufnr(bufnr), line = line } } }
  if timeout_ms then
    local response = client.request_sync("workspace/executeCommand", params, timeout_ms, bufnr)
    local answer = response and response.result
    M.apply(bufnr, answer)
    return answer
  end
  client.request("workspace/executeCommand", params, function(err, answer)
    if err then
      vim.notify("egcfg: " .. err.message, vim.log.levels.ERROR)
    else
      M.apply(bufnr, answer)
    end
  end, bufnr)
end

-- The commands the server's lenses name, run here so that their answers reach the buffer
-- (vim.lsp.codelens.run looks in vim.lsp.commands before asking the server).
vim.lsp.commands["egcfg.regenerateFrom"] = function(command)
  local target = command.arguments[1]
  vim.api.nvim_win_set_cursor(0, { target.line + 1, 0 })
  M.regenerate(target.line)
end
vim.lsp.commands["egcfg.completeWithTests"] = function(command)
  local target = command.arguments[1]
  vim.api.nvim_win_set_cursor(0, { target.line + 1, target.character or 0 })
  M.complete()
end
vim.lsp.commands["egcfg.showTrace"] = function(command)
  local answer = M.command("egcfg.showTrace", command.arguments)
  if answer and answer.found then
    vim.lsp.util.open_floating_preview(vim.split(answer.markdown, "\n"), "markdown", {})
  end
end

function M.command(name, args, timeout_ms)
  local client = M.client()
  if not client then return nil end
  local response = client.request_sync("workspace/executeCommand", { command = name, arguments = args or {} },
    timeout_ms or 5000, 0)
  return response and response.result
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", M.config, opts or {})
  local group = vim.api.nvim_create_augroup("egcfg", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = M.config.filetypes,
    callback = function(args) M.start(args.buf) end,
  })
  vim.api.nvim_create_user_command("EgcfgComplete", function() M.complete() end, {})
  vim.api.nvim_create_user_command("EgcfgFix", function() M.regenerate() end, {})
  vim.api.nvim_create_user_command("EgcfgCancel", function() M.command("egcfg.cancel") end, {})
  vim.api.nvim_create_user_command("EgcfgStatus", function()
    print(vim.inspect(M.command("egcfg.status")))
  end, {})
  vim.api.nvim_create_user_command("EgcfgTrace", function()
    local answer = M.command("egcfg.showTrace", { cursor_args() })
    if answer and answer.found then
      vim.lsp.util.open_floating_preview(vim.split(answer.markdown, "\n"), "markdown", {})
    end
  end, {})
end

return M
