# A small animated scene for tests and the demo: Blender's default cube turning half a turn
# over 24 frames, 64 × 48 pixels, 4 samples, saved to the path after `--`.
import sys
import bpy

out = sys.argv[sys.argv.index("--") + 1]
bpy.ops.wm.read_factory_settings(use_empty=False)
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = 4
scene.render.resolution_x = 64
scene.render.resolution_y = 48
scene.render.resolution_percentage = 100
scene.frame_start = 1
scene.frame_end = 24
cube = bpy.data.objects["Cube"]
cube.rotation_euler = (0.0, 0.0, 0.0)
cube.keyframe_insert(data_path="rotation_euler", frame=1)
cube.rotation_euler = (0.3, 0.0, 3.14159)
cube.keyframe_insert(data_path="rotation_euler", frame=24)
bpy.ops.wm.save_as_mainfile(filepath=out)
