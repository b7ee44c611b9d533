"""The REST operations the examples name: HTTP method, path, body parameter, SDK model.

Methods and paths are those of the azure-batch 15.1 request builders
(`azure/batch/_operations/_operations.py`, api-version 2025-06-01); the model is the class
the SDK deserializes the 200 body into (for lists, the class of one `value` item).
"""

from __future__ import annotations

from dataclasses import dataclass

from azure.batch import models


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with {poolId}-style placeholders named like the example parameters
    body: str | None = None  # the example parameter that is the JSON body
    model: type | None = None  # SDK model of the response body (of one item for lists)
    listing: bool = False
    query: tuple[str, ...] = ()  # example parameters sent as query parameters


OPERATIONS: dict[str, Operation] = {
    # pools
    "Pools_CreatePool": Operation("POST", "/pools", "pool"),
    "Pools_GetPool": Operation("GET", "/pools/{poolId}", model=models.BatchPool),
    "Pools_PoolExists": Operation("HEAD", "/pools/{poolId}"),
    "Pools_ListPools": Operation("GET", "/pools", model=models.BatchPool, listing=True),
    "Pools_DeletePool": Operation("DELETE", "/pools/{poolId}"),
    "Pools_UpdatePool": Operation("PATCH", "/pools/{poolId}", "pool"),
    "Pools_ReplacePoolProperties": Operation("POST", "/pools/{poolId}/updateproperties", "pool"),
    "Pools_ResizePool": Operation("POST", "/pools/{poolId}/resize", "resizeOptions"),
    "Pools_StopPoolResize": Operation("POST", "/pools/{poolId}/stopresize"),
    "Pools_EnablePoolAutoScale": Operation("POST", "/pools/{poolId}/enableautoscale",
                                           "enableAutoScaleOptions"),
    "Pools_DisablePoolAutoScale": Operation("POST", "/pools/{poolId}/disableautoscale"),
    "Pools_EvaluatePoolAutoScale": Operation("POST", "/pools/{poolId}/evaluateautoscale",
                                             "evaluateAutoScaleOptions", model=models.AutoScaleRun),
    "Pools_RemoveNodes": Operation("POST", "/pools/{poolId}/removenodes", "removeOptions"),
    "Pools_ListPoolNodeCounts": Operation("GET", "/nodecounts", model=models.BatchPoolNodeCounts,
                                          listing=True),
    "Pools_ListSupportedImages": Operation("GET", "/supportedimages",
                                           model=models.BatchSupportedImage, listing=True),
    "Pools_ListPoolUsageMetrics": Operation("GET", "/poolusagemetrics",
                                            model=models.BatchPoolUsageMetrics, listing=True),
    # nodes
    "Nodes_ListNodes": Operation("GET", "/pools/{poolId}/nodes", model=models.BatchNode,
                                 listing=True),
    "Nodes_GetNode": Operation("GET", "/pools/{poolId}/nodes/{nodeId}", model=models.BatchNode),
    "Nodes_RebootNode": Operation("POST", "/pools/{poolId}/nodes/{nodeId}/reboot",
                                  "nodeRebootParameter"),
    "Nodes_CreateNodeUser": Operation("POST", "/pools/{poolId}/nodes/{nodeId}/users", "user"),
    "Nodes_DeleteNodeUser": Operation("DELETE", "/pools/{poolId}/nodes/{nodeId}/users/{userName}"),
    "Nodes_ReplaceNodeUser": Operation("PUT", "/pools/{poolId}/nodes/{nodeId}/users/{userName}",
                                       "updateOptions"),
    "Nodes_GetNodeRemoteLoginSettings": Operation(
        "GET", "/pools/{poolId}/nodes/{nodeId}/remoteloginsettings",
        model=models.BatchNodeRemoteLoginSettings),
    "Nodes_ListNodeFiles": Operation("GET", "/pools/{poolId}/nodes/{nodeId}/files",
                                     model=models.BatchNodeFile, listing=True,
                                     query=("recursive",)),
    "Nodes_GetNodeFile": Operation("GET", "/pools/{poolId}/nodes/{nodeId}/files/{filePath}"),
    "Nodes_GetNodeFileProperties": Operation("HEAD",
                                             "/pools/{poolId}/nodes/{nodeId}/files/{filePath}"),
    "Nodes_DeleteNodeFile": Operation("DELETE", "/pools/{poolId}/nodes/{nodeId}/files/{filePath}",
                                      query=("recursive",)),
    # jobs
    "Jobs_CreateJob": Operation("POST", "/jobs", "job"),
    "Jobs_GetJob": Operation("GET", "/jobs/{jobId}", model=models.BatchJob),
    "Jobs_ListJobs": Operation("GET", "/jobs", model=models.BatchJob, listing=True),
    "Jobs_UpdateJob": Operation("PATCH", "/jobs/{jobId}", "job"),
    "Jobs_ReplaceJob": Operation("PUT", "/jobs/{jobId}", "job"),
    "Jobs_TerminateJob": Operation("POST", "/jobs/{jobId}/terminate", "jobTerminateParameter"),
    "Jobs_DeleteJob": Operation("DELETE", "/jobs/{jobId}"),
    "Jobs_DisableJob": Operation("POST", "/jobs/{jobId}/disable", "disableOptions"),
    "Jobs_EnableJob": Operation("POST", "/jobs/{jobId}/enable"),
    "Jobs_GetJobTaskCounts": Operation("GET", "/jobs/{jobId}/taskcounts",
                                       model=models.BatchTaskCountsResult),
    # tasks
    "Tasks_CreateTask": Operation("POST", "/jobs/{jobId}/tasks", "task"),
    "Tasks_CreateTaskCollection": Operation("POST", "/jobs/{jobId}/addtaskcollection",
                                            "taskCollection",
                                            model=models.BatchCreateTaskCollectionResult),
    "Tasks_ListTasks": Operation("GET", "/jobs/{jobId}/tasks", model=models.BatchTask,
                                 listing=True),
    "Tasks_GetTask": Operation("GET", "/jobs/{jobId}/tasks/{taskId}", model=models.BatchTask),
    "Tasks_ReplaceTask": Operation("PUT", "/jobs/{jobId}/tasks/{taskId}", "task"),
    "Tasks_TerminateTask": Operation("POST", "/jobs/{jobId}/tasks/{taskId}/terminate"),
    "Tasks_ReactivateTask": Operation("POST", "/jobs/{jobId}/tasks/{taskId}/reactivate"),
    "Tasks_DeleteTask": Operation("DELETE", "/jobs/{jobId}/tasks/{taskId}"),
    "Tasks_ListSubTasks": Operation("GET", "/jobs/{jobId}/tasks/{taskId}/subtasksinfo",
                                    model=models.BatchSubtask, listing=True),
    "Tasks_ListTaskFiles": Operation("GET", "/jobs/{jobId}/tasks/{taskId}/files",
                                     model=models.BatchNodeFile, listing=True,
                                     query=("recursive",)),
    "Tasks_GetTaskFile": Operation("GET", "/jobs/{jobId}/tasks/{taskId}/files/{filePath}"),
    "Tasks_GetTaskFileProperties": Operation("HEAD",
                                             "/jobs/{jobId}/tasks/{taskId}/files/{filePath}"),
    "Tasks_DeleteTaskFile": Operation("DELETE", "/jobs/{jobId}/tasks/{taskId}/files/{filePath}",
                                      query=("recursive",)),
}
