-- Headless Ardour 7 (ardour7-lua / luasession) part of tools/ardour/bounce.sh.
--
-- Loads a session made by `ardour7-new_session -m 1` (mono master, no panner in the way),
-- adds a mono audio track "Vox" with Voxsift (VST3) as its first plug-in, prints the
-- plug-in's parameters and latency, saves and closes. Audio is put on the track afterwards
-- by inject_region.py, because 7.3's Lua API has no headless import.
--
-- Arguments come from the environment (luasession's script arguments are not portable):
--   ARDOUR_SESSION_DIR, ARDOUR_SESSION_NAME, ARDOUR_BLOCK (engine period, default 512)

local dir = assert(os.getenv("ARDOUR_SESSION_DIR"), "ARDOUR_SESSION_DIR not set")
local name = assert(os.getenv("ARDOUR_SESSION_NAME"), "ARDOUR_SESSION_NAME not set")
local block = tonumber(os.getenv("ARDOUR_BLOCK") or "512")

-- Pick the dummy backend and its period before load_session() starts the engine.
assert(AudioEngine:set_backend("None (Dummy)", "", ""), "no 'None (Dummy)' backend")
AudioEngine:set_buffer_size(block)

assert(load_session(dir, name), "cannot load session " .. dir .. "/" .. name)
print(string.format("voxsift-ardour: session %s, %d Hz, block %d", name,
      Session:nominal_sample_rate(), Session:get_block_size()))

local tracks = Session:new_audio_track(1, 1, nil, 1, "Vox",
      ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true)
local track
for t in tracks:iter() do track = t end
assert(track, "cannot create track")

local proc = ARDOUR.LuaAPI.new_plugin(Session, "Voxsift", ARDOUR.PluginType.VST3, "")
if proc:isnil() then
  print("voxsift-ardour: VST3 'Voxsift' not in Ardour's plug-in cache (run ardour-vst3-scanner; set VST3_PATH)")
  close_session()
  os.exit(2)
end
assert(track:add_processor_by_index(proc, 0, nil, true) == 0, "cannot add Voxsift to the track")

local pi = proc:to_insert()
local plug = pi:plugin(0)
print(string.format("voxsift-ardour: plugin %s, latency %d samples", plug:name(), pi:signal_latency()))
for j = 0, plug:parameter_count() - 1 do
  if plug:parameter_is_control(j) and plug:parameter_is_input(j) then
    print(string.format("voxsift-ardour: param %d %-14s = %s", j, plug:parameter_label(j),
          tostring(ARDOUR.LuaAPI.get_processor_param(proc, j, true))))
  end
end

Session:save_state("", false, false, false, false, false)
close_session()
