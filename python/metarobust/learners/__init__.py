"""Meta-learners: ProtoNet and the MAML family (MAML, first-order MAML, Meta-SGD, ANIL).

All share :class:`Learner`'s interface: the call ``learner(support_x, support_y, query_x)``
(differentiable query logits of one task or a batch, for training loops of one's own),
``meta_backward(batch, ways)`` (meta-training loss,
back-propagated; ``sync=False`` keeps the loss and accuracy on the device, for GPU loops),
``evaluate_batch(batch, ways)`` (per-task query accuracy),
``query_logits(batch, ways)`` (detached), ``attack_logits(batch, ways)`` (query outputs
differentiable with respect to the images, parameters constant, for attacks) and
``predict(support_x, support_y, query_x)`` for one task.
"""

from .base import Learner, Task, task_batch_norm
from .maml import MAML
from .protonet import ProtoNet

__all__ = ["MAML", "Learner", "ProtoNet", "Task", "task_batch_norm"]
